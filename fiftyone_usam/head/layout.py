"""What a head checkpoint is on disk, and which store fields a head depends on (no torch here,
so the App's forms can check a head cheaply)."""

WEIGHTS = "head.safetensors"
METADATA = "head.json"
FORMAT = "usam-head"
FORMAT_VERSION = 1
# The sub-directories of a `usam train --out` directory, in the order load_head prefers them.
STAGES = ("student", "teacher")

# The spec fields that decide what a mask embedding means (and how many masks an image has).
COMPATIBILITY_FIELDS = (
    "sam_variant",
    "checkpoint_sha256",
    "encoder_input_size",
    "embedding_dim",
    "points_per_side",
)
