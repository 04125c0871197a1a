"""Error types that the CLI turns into exit codes (user error: 2, failed job: 3, gate: 1)."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad manifest, unknown plugin, missing file).

    The CLI prints ``str(error)`` as one line and exits 2, without a traceback. The message
    says what is wrong, where, and what to do.
    """


class IncompatibleError(UserError):
    """A combination that cannot run, e.g. Grad-CAM on a model without a conv layer."""
