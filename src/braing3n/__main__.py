from braing3n.cli import main

raise SystemExit(main())
