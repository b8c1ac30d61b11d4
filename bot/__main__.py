"""``python -m bot`` runs the same command line as ``chatsum``."""

from bot.cli import main

if __name__ == "__main__":
    main()
