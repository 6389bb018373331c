import sys

from pipeline.launch.main import main

sys.exit(main())
