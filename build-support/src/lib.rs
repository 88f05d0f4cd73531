//! Build-script support for bincrew apps and worker binaries: stamping a build identity and
//! checking that an app and its workers are paired. (Filled in by the build integration work.)
