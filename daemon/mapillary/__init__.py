"""HTTP clients of Mapillary's upload service and Graph API (httpx).

Every third-party failure is translated here into :mod:`daemon.errors`; nothing from httpx
leaks out.
"""

from daemon.mapillary.graph import GraphClient
from daemon.mapillary.upload_service import UploadService, session_key

__all__ = ["GraphClient", "UploadService", "session_key"]
