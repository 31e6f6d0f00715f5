"""`python -m pipelines.demo_data` = `mianshen demo-data` with every option."""
from pipelines.demo_data import main

raise SystemExit(main())
