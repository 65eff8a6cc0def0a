"""`python -m wildcircuits ...`: the same as the `wildcircuits` command."""

from wildcircuits.cli.main import main

raise SystemExit(main())
