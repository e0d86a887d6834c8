"""`python -m bench`: run every benchmark row and print one table."""

from __future__ import annotations

from .run import main

main()
