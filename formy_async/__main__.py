"""`python -m formy_async` is the `formy-async` command."""

from formy_async.cli import main

main()
