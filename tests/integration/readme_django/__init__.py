"""The smallest Django app the README's Django example needs: its ``order`` model."""
