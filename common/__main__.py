"""``python -m common``: the command line, which lives in the application layer (:mod:`common.app`)."""
from common.app import main

if __name__ == "__main__":
    main()
