"""mtlrec: a reproducible pipeline for multi-task recommendation papers (MPT-Rec, PMTRec)."""

__version__ = "0.1.0"
