from eagle_jax.cli import main

raise SystemExit(main())
