import sys

from pipelines.cli import main

# The guard matters: chunked runs start worker processes with multiprocessing's
# spawn, which imports this module again in each of them.
if __name__ == "__main__":
    sys.exit(main())
