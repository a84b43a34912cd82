"""``python -m cgkd.ops``: build the fused kernels if needed and print their library's path."""

from cgkd.ops import library_path

print(library_path())
