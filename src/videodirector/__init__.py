"""videodirector: precise text-driven video editing with diffusion models."""
__version__ = "0.1.0"
