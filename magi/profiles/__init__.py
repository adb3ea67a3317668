"""Profile storage: the seed's ProfileManager over the Hydra ``profile`` group."""

from magi.profiles.manager import ProfileManager, normalize_profile_name, read_profile_file

__all__ = ["ProfileManager", "normalize_profile_name", "read_profile_file"]
