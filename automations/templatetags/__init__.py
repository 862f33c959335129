"""Template filters for the portal's pages (Django discovers this package at the app root)."""
