"""Redis: hardening profile -> redis.conf/ACL text, audit rules, locating and running the server."""
