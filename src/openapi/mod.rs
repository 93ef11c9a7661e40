//! Loads an OpenAPI 3.x document and turns it into the [`OperationIndex`] that `search` ranks and `execute`
//! validates against. Operations are keyed by method + path because Polytomic's operationIds repeat.

mod index;
mod load;
mod schema;

pub use index::{
    BodyField, KeyType, Operation, OperationIndex, Pagination, Param, ParamLocation, PathMatch,
    Segment, TagInfo, humanize_tag as humanize_tag_public,
};
pub use load::{EMBEDDED_DOCUMENT, IndexSource, LoadError, index_text, load_index};
pub use schema::describe_type;
