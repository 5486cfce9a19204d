"""Version of odm_mm."""
__version__ = '0.1.0'
