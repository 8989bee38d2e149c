"""Networks of the bundles (auto-encoders); each bundle's network lives here so bundles and tests share it."""
