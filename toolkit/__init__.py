"""cbtool: catch code-submission failures for Codabench/CodaLab image-classification challenges before upload."""

__version__ = "0.1.0"
