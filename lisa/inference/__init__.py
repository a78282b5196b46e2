from .pipeline import LisaPipeline, LisaResult

__all__ = ["LisaPipeline", "LisaResult"]
