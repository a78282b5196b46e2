"""The embedded demo: a tiny LISA trained end to end on synthetic shapes, on a laptop CPU.

``lisa demo`` (``run_demo``) writes the data in the real ReasonSeg / LLaVA / RefCOCO formats,
builds the tiny model (``lisa.demo.tiny_model``, initialised by ``lisa.demo.init_weights``), trains it with
``lisa train``'s code, exports it with ``lisa export``, scores it with ``lisa eval``'s code and
answers two queries with ``LisaPipeline``.
"""


def run_demo(*args, **kwargs):
    from .run import run_demo as _run

    return _run(*args, **kwargs)


__all__ = ["run_demo"]
