//! Paging of collections: opaque skip tokens and next links.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Encodes an offset as an opaque token.
pub fn encode_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("azemu:{offset}"))
}

/// Decodes a token made by [`encode_token`].
pub fn decode_token(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("azemu:")?.parse().ok()
}

/// One page of `items` starting at `offset`, and the offset of the next page if any.
pub fn page<T>(items: Vec<T>, offset: usize, size: usize) -> (Vec<T>, Option<usize>) {
    let size = size.max(1);
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let next = offset + page.len();
    if next < total {
        (page, Some(next))
    } else {
        (page, None)
    }
}

/// Rebuilds `base + path` with the original query pairs (minus any previous skip token) and
/// `token_param=token`.
pub fn next_link(
    base: &str,
    path: &str,
    query: &[(String, String)],
    token_param: &str,
    offset: usize,
) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        if !k.eq_ignore_ascii_case(token_param) {
            ser.append_pair(k, v);
        }
    }
    ser.append_pair(token_param, &encode_token(offset));
    // The form serializer writes spaces as `+`; Azure writes `%20` (a literal `+` is `%2B`).
    format!("{base}{path}?{}", ser.finish().replace('+', "%20"))
}

/// Parses a raw query string into ordered pairs.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// The first value of `name` (case-insensitive name match).
pub fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_tokens() {
        let (p, next) = page((0..5).collect::<Vec<_>>(), 0, 2);
        assert_eq!(p, vec![0, 1]);
        assert_eq!(next, Some(2));
        let (p, next) = page((0..5).collect::<Vec<_>>(), 4, 2);
        assert_eq!(p, vec![4]);
        assert_eq!(next, None);
        assert_eq!(decode_token(&encode_token(42)), Some(42));
        assert_eq!(decode_token("nope"), None);
        let link = next_link(
            "https://h",
            "/v1.0/groups",
            &[
                ("$filter".into(), "displayName eq 'a b'".into()),
                ("$skiptoken".into(), "x".into()),
            ],
            "$skiptoken",
            2,
        );
        assert!(link.starts_with(
            "https://h/v1.0/groups?%24filter=displayName%20eq%20%27a%20b%27&%24skiptoken="
        ));
    }
}
