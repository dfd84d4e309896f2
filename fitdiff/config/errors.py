"""The error raised for any invalid configuration, before any work starts."""


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or has a value of the wrong type.

    The message always names the full dotted key (``model.optimizer.lr``).
    """
