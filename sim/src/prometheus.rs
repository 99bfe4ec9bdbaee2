//! Starts a real Prometheus (the Debian package) scraping the simulator, for tests and the
//! demo. (Being built.)
