"""One exception type for everything a user can fix; the CLI prints it as one line."""


class IfpruneError(Exception):
    """A problem with the user's input or environment, with a message that names the fix."""
