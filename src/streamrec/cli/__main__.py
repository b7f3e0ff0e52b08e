"""``python -m streamrec.cli``: how the server starts its update and worker children."""

from streamrec.cli import main

raise SystemExit(main())
