"""User-facing errors: one clear line naming the field, file or model at fault."""


class MtkdrlError(Exception):
    """An error caused by user input (recipe, data, weights); the CLI prints it as one line."""
