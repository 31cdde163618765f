import sys

from vitcompress.cli import main

sys.exit(main())
