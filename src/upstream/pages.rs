//! Following a list operation's pages: reading one page (its items and its next cursor, projected to the
//! requested fields) and merging pages into one list in the shape of a single page, within the result budget.
//! Pure: the loop that sends each page's request lives with the `execute` tool.

use serde_json::Value;

use super::shape::{next_cursor, project, serialized_len};
use crate::openapi::Pagination;

/// Most pages one `execute` call may read.
pub const MAX_PAGES: u32 = 20;

/// How to walk one operation's pages. Only pagination the server can follow by itself has one: a cursor or
/// page number that the response hands back, and a known place for the items.
#[derive(Debug, Clone)]
pub struct Follow<'a> {
    pagination: &'a Pagination,
    /// The query parameter that takes the next cursor or page number.
    pub cursor_param: &'a str,
    items: Vec<&'a str>,
}

impl<'a> Follow<'a> {
    pub fn new(pagination: &'a Pagination) -> Option<Self> {
        if !matches!(pagination.style.as_str(), "cursor" | "page") {
            return None;
        }
        pagination.next.as_ref()?;
        Some(Self {
            pagination,
            cursor_param: pagination.cursor_param()?,
            items: pagination.items.as_deref()?.split('.').collect(),
        })
    }
}

/// One page as read: the projected page with its items taken out, and the items.
#[derive(Debug)]
pub struct Page {
    frame: Value,
    items: Vec<Value>,
    /// Items on the page before projection (a projection may drop the list itself).
    pub count: usize,
    /// The cursor for the page after this one; `None` at the end of the list.
    pub next: Option<String>,
    unmatched: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("the page is not JSON")]
    NotJson,
    #[error("the page has no list at `{0}`")]
    NoItems(String),
}

/// Parses a page, reads its next cursor (before projection, which may drop it), then keeps `fields`.
pub fn read_page(raw: &[u8], follow: &Follow<'_>, fields: &[String]) -> Result<Page, PageError> {
    let parsed: Value = serde_json::from_slice(raw).map_err(|_| PageError::NotJson)?;
    let count = match item_list(&parsed, &follow.items) {
        Some(Value::Array(items)) => items.len(),
        Some(Value::Null) => 0,
        _ => return Err(PageError::NoItems(follow.items.join("."))),
    };
    let next = next_cursor(&parsed, follow.pagination);
    let (mut frame, unmatched) = if fields.is_empty() {
        (parsed, Vec::new())
    } else {
        project(parsed, fields)
    };
    let items = take_items(&mut frame, &follow.items);
    Ok(Page {
        frame,
        items,
        count,
        next,
        unmatched,
    })
}

fn item_list<'v>(body: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(body, |value, part| value.get(part))
}

/// Moves the items out of `frame`, leaving an empty list in their place (absent when projected away).
fn take_items(frame: &mut Value, path: &[&str]) -> Vec<Value> {
    let slot = path
        .iter()
        .try_fold(frame, |value, part| value.get_mut(*part));
    match slot {
        Some(slot) => match std::mem::replace(slot, Value::Array(Vec::new())) {
            Value::Array(items) => items,
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// How much of a page went into the merged list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Whole,
    /// The first page alone was over the budget: the first `kept` items of it are in.
    Cut {
        kept: usize,
    },
    /// Nothing of this page is in (the budget is full, or not even its frame fits).
    NoRoom,
}

/// Pages merged so far: the last page's frame holding every item read, kept within `budget` characters.
#[derive(Debug)]
pub struct Merged {
    budget: usize,
    frame: Option<Value>,
    items: Vec<Value>,
    /// Serialised length of the items with their separating commas.
    items_chars: usize,
    pub pages: u32,
    /// Items read, counted before projection.
    pub count: usize,
    unmatched: Option<Vec<String>>,
}

/// The merged list, ready to hand back.
#[derive(Debug)]
pub struct MergedBody {
    pub body: Value,
    /// Items in `body`; `None` when the projection dropped the list itself.
    pub kept: Option<usize>,
    /// Requested fields that matched nothing on any page.
    pub unmatched_fields: Vec<String>,
}

impl Merged {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            frame: None,
            items: Vec::new(),
            items_chars: 0,
            pages: 0,
            count: 0,
            unmatched: None,
        }
    }

    /// Adds `page` when the merged body stays within the budget. Later pages go in whole or not at all, so
    /// the cursor that fetched a page left out continues exactly; only a first page is cut, at an item
    /// boundary, because there is nothing else to show.
    pub fn add(&mut self, page: Page) -> Fit {
        let frame_chars = serialized_len(&page.frame);
        let page_chars: usize = page.items.iter().map(|item| serialized_len(item) + 1).sum();
        let separators = usize::from(!self.items.is_empty() && !page.items.is_empty());
        let total = frame_chars + self.items_chars + separators + page_chars.saturating_sub(1);
        let fit = if total <= self.budget {
            Fit::Whole
        } else if self.pages == 0 && frame_chars < self.budget {
            Fit::Cut {
                kept: self.fitting_prefix(&page.items, self.budget - frame_chars),
            }
        } else {
            return Fit::NoRoom;
        };
        let kept = match fit {
            Fit::Cut { kept } => kept,
            _ => page.items.len(),
        };
        self.accept(page, kept);
        fit
    }

    /// How many leading items fit in `room` characters of list.
    fn fitting_prefix(&self, items: &[Value], room: usize) -> usize {
        let mut used = 0;
        items
            .iter()
            .take_while(|item| {
                used += serialized_len(item) + usize::from(used > 0);
                used <= room
            })
            .count()
    }

    fn accept(&mut self, page: Page, kept: usize) {
        for item in page.items.into_iter().take(kept) {
            self.items_chars += serialized_len(&item) + usize::from(!self.items.is_empty());
            self.items.push(item);
        }
        self.unmatched = Some(match self.unmatched.take() {
            None => page.unmatched,
            Some(mut before) => {
                before.retain(|field| page.unmatched.contains(field));
                before
            }
        });
        self.frame = Some(page.frame);
        self.pages += 1;
        self.count += page.count;
    }

    /// The last page's frame with every item read put back in place of its own.
    pub fn finish(self, follow: &Follow<'_>) -> MergedBody {
        let kept = self.items.len();
        let mut body = self.frame.unwrap_or(Value::Null);
        let slot = follow
            .items
            .iter()
            .try_fold(&mut body, |value, part| value.get_mut(*part));
        let kept = slot.map(|slot| {
            *slot = Value::Array(self.items);
            kept
        });
        MergedBody {
            body,
            kept,
            unmatched_fields: self.unmatched.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn syncs() -> Pagination {
        Pagination {
            style: "cursor".into(),
            request: vec!["page_token".into(), "limit".into()],
            next: Some("pagination.next_page_token".into()),
            cursor_from: None,
            max_limit: Some(50),
            note: None,
            items: Some("data".into()),
        }
    }

    fn page(ids: std::ops::Range<usize>, next: Option<&str>) -> Vec<u8> {
        let items: Vec<Value> = ids
            .map(
                |i| json!({"id": format!("s-{i}"), "name": format!("sync {i}"), "mode": "replace"}),
            )
            .collect();
        let pagination = match next {
            Some(token) => json!({"next_page_token": token}),
            None => json!({}),
        };
        serde_json::to_vec(&json!({"data": items, "pagination": pagination})).unwrap()
    }

    #[test]
    fn only_cursor_and_page_styles_with_a_next_and_an_item_list_are_followed() {
        let p = syncs();
        let follow = Follow::new(&p).unwrap();
        assert_eq!(follow.cursor_param, "page_token");
        let console = Pagination {
            request: vec!["limit".into(), "after".into()],
            next: Some("data.next_cursor".into()),
            items: Some("data.entries".into()),
            ..syncs()
        };
        assert_eq!(Follow::new(&console).unwrap().cursor_param, "after");
        let events = Pagination {
            style: "starting_after".into(),
            next: None,
            ..syncs()
        };
        assert!(Follow::new(&events).is_none());
        let no_items = Pagination {
            items: None,
            ..syncs()
        };
        assert!(Follow::new(&no_items).is_none());
    }

    #[test]
    fn pages_merge_in_order_into_the_shape_of_one_page() {
        let p = syncs();
        let follow = Follow::new(&p).unwrap();
        let mut merged = Merged::new(100_000);
        let first = read_page(&page(0..3, Some("t2")), &follow, &[]).unwrap();
        assert_eq!((first.count, first.next.as_deref()), (3, Some("t2")));
        assert_eq!(merged.add(first), Fit::Whole);
        let last = read_page(&page(3..5, None), &follow, &[]).unwrap();
        assert_eq!(last.next, None);
        assert_eq!(merged.add(last), Fit::Whole);
        assert_eq!((merged.pages, merged.count), (2, 5));
        let out = merged.finish(&follow);
        let ids: Vec<&str> = out.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["s-0", "s-1", "s-2", "s-3", "s-4"]);
        assert_eq!(out.body["pagination"], json!({}));
        assert_eq!(out.kept, Some(5));
    }

    #[test]
    fn projection_applies_to_every_item_and_the_cursor_survives_it() {
        let p = syncs();
        let follow = Follow::new(&p).unwrap();
        let fields = vec!["data.id".to_owned(), "data.nope".to_owned()];
        let read = read_page(&page(0..2, Some("t2")), &follow, &fields).unwrap();
        assert_eq!(read.next.as_deref(), Some("t2"));
        let mut merged = Merged::new(100_000);
        merged.add(read);
        merged.add(read_page(&page(2..3, None), &follow, &fields).unwrap());
        let out = merged.finish(&follow);
        assert_eq!(
            out.body,
            json!({"data": [{"id": "s-0"}, {"id": "s-1"}, {"id": "s-2"}]})
        );
        assert_eq!(out.unmatched_fields, ["data.nope"]);
    }

    #[test]
    fn the_measured_size_is_the_serialised_size_and_later_pages_go_in_whole_or_not_at_all() {
        let p = syncs();
        let follow = Follow::new(&p).unwrap();
        let one = read_page(&page(0..10, Some("t2")), &follow, &[]).unwrap();
        let mut whole = Merged::new(usize::MAX);
        whole.add(one);
        whole.add(read_page(&page(10..20, Some("t3")), &follow, &[]).unwrap());
        let exact = serde_json::to_string(&whole.finish(&follow).body)
            .unwrap()
            .len();
        // A budget of exactly the two-page size takes both; one character less leaves the second page out.
        for (budget, pages) in [(exact, 2), (exact - 1, 1)] {
            let mut merged = Merged::new(budget);
            assert_eq!(
                merged.add(read_page(&page(0..10, Some("t2")), &follow, &[]).unwrap()),
                Fit::Whole
            );
            let second = read_page(&page(10..20, Some("t3")), &follow, &[]).unwrap();
            let fit = merged.add(second);
            assert_eq!(merged.pages, pages, "budget {budget}: {fit:?}");
            let body = merged.finish(&follow).body;
            assert!(serde_json::to_string(&body).unwrap().len() <= budget);
        }
    }

    #[test]
    fn a_first_page_over_the_budget_is_cut_at_an_item_boundary() {
        let p = syncs();
        let follow = Follow::new(&p).unwrap();
        let mut merged = Merged::new(400);
        let fit = merged.add(read_page(&page(0..50, Some("t2")), &follow, &[]).unwrap());
        let Fit::Cut { kept } = fit else {
            panic!("{fit:?}")
        };
        assert!(kept > 0 && kept < 50, "{kept}");
        let out = merged.finish(&follow);
        assert_eq!(out.kept, Some(kept));
        assert!(serde_json::to_string(&out.body).unwrap().len() <= 400);
    }

    #[test]
    fn a_page_without_its_list_is_an_error_and_null_is_an_empty_list() {
        let p = syncs();
        let follow = Follow::new(&p).unwrap();
        assert_eq!(
            read_page(br#"{"data": {"id": 1}}"#, &follow, &[]).unwrap_err(),
            PageError::NoItems("data".into())
        );
        assert_eq!(
            read_page(b"<html>", &follow, &[]).unwrap_err(),
            PageError::NotJson
        );
        let empty = read_page(br#"{"data": null, "pagination": {}}"#, &follow, &[]).unwrap();
        assert_eq!((empty.count, empty.next), (0, None));
    }

    #[test]
    fn page_style_reads_the_page_number_from_the_next_link() {
        let p = Pagination {
            style: "page".into(),
            request: vec!["page".into()],
            next: Some("links.next".into()),
            max_limit: None,
            items: Some("data.results".into()),
            ..syncs()
        };
        let follow = Follow::new(&p).unwrap();
        let raw = br#"{"data": {"id": "q", "results": [{"a": 1}]}, "links": {"next": "/api/queries/q?page=3"}}"#;
        let read = read_page(raw, &follow, &[]).unwrap();
        assert_eq!((read.count, read.next.as_deref()), (1, Some("3")));
    }
}
