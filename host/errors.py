"""Base class of every error a user can cause; the CLI prints its message as one line and exits 2."""


class UserError(Exception):
    pass
