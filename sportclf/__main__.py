"""`python -m sportclf`, where the console script is not on PATH."""
from sportclf.cli import main

main()
