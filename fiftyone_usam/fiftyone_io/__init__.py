"""Everything that touches a FiftyOne dataset."""
