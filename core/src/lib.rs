pub mod error;
pub mod data;
pub mod import;
pub mod linalg;
pub mod ann;
