"""``python -m promoe.analysis RUN_DIR``."""

from promoe.analysis import main

main()
