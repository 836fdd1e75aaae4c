from hf_transfer.cli import main

raise SystemExit(main())
