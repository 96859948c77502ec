"""What every operator shares: its config, and progress from library callbacks."""


def progress_callback(ctx, unit):
    """A ``(done, total)`` callback setting the operation's progress (kept for delegated runs)."""

    def report(done, total):
        ctx.set_progress(progress=done / total if total else 1.0, label=f"{done}/{total} {unit}")

    return report


def usam_config(name, label, description, delegated=True):
    """An operator's config: the common "U-SAM: " label prefix, a dynamic form (its checks run
    as the user types), immediate or delegated execution (``delegated``: the default choice)."""
    import fiftyone.operators as foo

    return foo.OperatorConfig(
        name=name,
        label=f"U-SAM: {label}",
        description=description,
        icon="/assets/icon.svg",
        dynamic=True,
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        default_choice_to_delegated=delegated,
    )
