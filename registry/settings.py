"""The ``[registry]`` config section and its defaults, read from a plain dict so the registry
works from a full Personas config, from the section alone, or from a few keys in a test."""

from __future__ import annotations

MIB = 1024 * 1024

DEFAULTS = {
    "url": "",                 # a running registry service (http://host:port); "" = embedded in this process
    "root": "",                # registry files (SQLite, blobs, signing key); "" = ~/.local/share/personas/registry
    "database_url": "",        # SQLAlchemy URL; "" = sqlite:///<root>/registry.db
    "object_store": "",        # "" = files under <root>/blobs; "file:///DIR"; "s3://BUCKET"
    "s3_endpoint_url": "",     # S3-compatible endpoint; "" = AWS
    "s3_access_key": "",       # "" = boto3's usual chain (environment, ~/.aws)
    "s3_secret_key": "",
    "s3_region": "us-east-1",
    "secret": "",              # HMAC key for signed asset URLs; "" = generated once into <root>/signing.key
    "host": "127.0.0.1",       # `personas registry serve` binds here
    "port": 8090,
    "public_url": "",          # base of signed asset URLs; "" = http://host:port
    "max_upload_mb": 64,       # one build's uploads in total
    "max_file_mb": 16,         # one uploaded file
    "signed_url_ttl_s": 300,   # lifetime of a signed or presigned asset URL
    "max_jobs": 2,             # builds running at once
    "job_queue": 4,            # builds waiting; beyond that a new build is refused (503)
    "client_timeout_s": 30.0,  # a client's wait for one HTTP answer from the service
}


def registry_section(config: dict | None) -> dict:
    """The registry settings with defaults filled in; ``config`` is a whole config (with a
    ``registry`` table) or the section itself."""
    config = dict(config or {})
    section = config["registry"] if isinstance(config.get("registry"), dict) else config
    return {**DEFAULTS, **section}


def service_url(section: dict) -> str:
    """Where the service listens, as clients and signed URLs spell it."""
    if section.get("public_url"):
        return str(section["public_url"]).rstrip("/")
    return f"http://{section['host']}:{int(section['port'])}"
