"""``python -m mobilise``: the same as the ``mobilise`` command."""

from .cli import main

main()
