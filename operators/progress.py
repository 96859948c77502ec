"""Progress reporting from library callbacks to the operator's execution context."""


def progress_callback(ctx, unit):
    """A ``(done, total)`` callback setting the operation's progress (kept for delegated runs)."""

    def report(done, total):
        ctx.set_progress(progress=done / total if total else 1.0, label=f"{done}/{total} {unit}")

    return report
