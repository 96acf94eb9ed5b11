"""Every editing method, imported once so that each registers its names (:func:`.base.register`) and its
settings section (:func:`videodirector.config.register_settings`). Import this module, not the method
modules one by one, wherever all methods must be known: the API, the CLI and the bench."""

from . import videodirector  # noqa: F401
from . import i2vedit  # noqa: F401
from . import assd  # noqa: F401
from . import video_p2p  # noqa: F401
