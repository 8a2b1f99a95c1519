"""The one exception type for mistakes a user can cause.

Anything raised as :class:`UserError` reaches the command line as one line on
stderr and exit code 2, without a traceback. The message names the file, row
or key at fault and says what to do about it.
"""


class UserError(Exception):
    """A bad config, file, label or argument: reported as one line, exit code 2."""
