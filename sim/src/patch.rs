//! JSON merge patch, JSON patch and strategic merge patch. (Being built.)
