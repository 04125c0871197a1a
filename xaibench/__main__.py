"""`python -m xaibench`: the same command line as the `xaibench` script."""

from xaibench.cli import main

main()
