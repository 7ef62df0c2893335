//! A small OData `$filter` parser: `prop eq 'v'`, `prop ne 'v'`, `prop in ('a','b')`,
//! functions such as `startswith(prop,'v')`, `atScope()` or `assignedTo('id')`, the lambda
//! `coll/any(x:x eq 'v')` (or `coll/any(x:startswith(x,'v'))`) over a string collection,
//! joined by `and` or by `or` (not both).

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Bool(bool),
    Null,
    /// A bare identifier (a property name inside a function call).
    Ident(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    Eq(String, Lit),
    Ne(String, Lit),
    In(String, Vec<Lit>),
    Func(String, Vec<Lit>),
    /// `coll/any(x:x eq 'v')` or `coll/any(x:startswith(x,'v'))`: some item of the string
    /// collection `coll` matches.
    Any(String, AnyTest),
}

/// The test inside an `any` lambda.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyTest {
    Eq(String),
    StartsWith(String),
}

impl AnyTest {
    /// True when `item` passes (case-insensitively, as Graph compares strings).
    pub fn matches(&self, item: &str) -> bool {
        let item = item.to_lowercase();
        match self {
            AnyTest::Eq(v) => item == v.to_lowercase(),
            AnyTest::StartsWith(v) => item.starts_with(&v.to_lowercase()),
        }
    }
}

/// Parses the body of `coll/any(...)` from `toks[i]` (just after the opening parenthesis);
/// returns the test and the index after the closing parenthesis.
fn parse_any(toks: &[Tok], mut i: usize) -> Result<(AnyTest, usize), String> {
    let bad = || "expected 'x:x eq 'value'' or 'x:startswith(x,'value')' in any()".to_string();
    let Some(Tok::Ident(head)) = toks.get(i) else {
        return Err(bad());
    };
    let (var, rest) = head.split_once(':').ok_or_else(bad)?;
    if var.is_empty() {
        return Err(bad());
    }
    i += 1;
    let test = if rest == var {
        match (toks.get(i), toks.get(i + 1)) {
            (Some(Tok::Ident(op)), Some(Tok::Str(v))) if op.eq_ignore_ascii_case("eq") => {
                i += 2;
                AnyTest::Eq(v.clone())
            }
            _ => return Err(bad()),
        }
    } else if rest.eq_ignore_ascii_case("startswith") {
        match (
            toks.get(i),
            toks.get(i + 1),
            toks.get(i + 2),
            toks.get(i + 3),
            toks.get(i + 4),
        ) {
            (
                Some(Tok::LParen),
                Some(Tok::Ident(x)),
                Some(Tok::Comma),
                Some(Tok::Str(v)),
                Some(Tok::RParen),
            ) if x == var => {
                i += 5;
                AnyTest::StartsWith(v.clone())
            }
            _ => return Err(bad()),
        }
    } else {
        return Err(bad());
    };
    if toks.get(i) != Some(&Tok::RParen) {
        return Err(bad());
    }
    Ok((test, i + 1))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub clauses: Vec<Clause>,
    /// True when the clauses are joined by `or`.
    pub any: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".to_string()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            c if c.is_alphanumeric() || "._/-$@:".contains(c) => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || "._/-$@:".contains(chars[i]))
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character '{other}'")),
        }
    }
    Ok(out)
}

fn lit(tok: Option<&Tok>) -> Result<Lit, String> {
    match tok {
        Some(Tok::Str(s)) => Ok(Lit::Str(s.clone())),
        Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
        Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
        Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("null") => Ok(Lit::Null),
        Some(Tok::Ident(w)) => Ok(Lit::Ident(w.clone())),
        _ => Err("expected a value".to_string()),
    }
}

/// Parses a filter expression.
pub fn parse(s: &str) -> Result<Filter, String> {
    let toks = tokenize(s)?;
    let mut i = 0;
    let mut clauses = Vec::new();
    let mut joiner: Option<bool> = None;
    loop {
        let name = match toks.get(i) {
            Some(Tok::Ident(n)) => n.clone(),
            _ => return Err("expected a property or function name".to_string()),
        };
        if name.eq_ignore_ascii_case("not") {
            return Err("the 'not' operator is not supported".to_string());
        }
        i += 1;
        match toks.get(i) {
            Some(Tok::LParen) if name.to_ascii_lowercase().ends_with("/any") => {
                let coll = name[..name.len() - "/any".len()].to_string();
                let (test, next) = parse_any(&toks, i + 1)?;
                i = next;
                clauses.push(Clause::Any(coll, test));
            }
            Some(Tok::LParen) => {
                i += 1;
                let mut args = Vec::new();
                if toks.get(i) == Some(&Tok::RParen) {
                    i += 1;
                } else {
                    loop {
                        args.push(lit(toks.get(i))?);
                        i += 1;
                        match toks.get(i) {
                            Some(Tok::Comma) => i += 1,
                            Some(Tok::RParen) => {
                                i += 1;
                                break;
                            }
                            _ => return Err("expected ',' or ')'".to_string()),
                        }
                    }
                }
                clauses.push(Clause::Func(name.to_ascii_lowercase(), args));
            }
            Some(Tok::Ident(op)) => {
                let op = op.to_ascii_lowercase();
                i += 1;
                match op.as_str() {
                    "eq" | "ne" => {
                        let v = lit(toks.get(i))?;
                        i += 1;
                        clauses.push(if op == "eq" {
                            Clause::Eq(name, v)
                        } else {
                            Clause::Ne(name, v)
                        });
                    }
                    "in" => {
                        if toks.get(i) != Some(&Tok::LParen) {
                            return Err("expected '(' after 'in'".to_string());
                        }
                        i += 1;
                        let mut vals = Vec::new();
                        loop {
                            vals.push(lit(toks.get(i))?);
                            i += 1;
                            match toks.get(i) {
                                Some(Tok::Comma) => i += 1,
                                Some(Tok::RParen) => {
                                    i += 1;
                                    break;
                                }
                                _ => return Err("expected ',' or ')'".to_string()),
                            }
                        }
                        clauses.push(Clause::In(name, vals));
                    }
                    other => return Err(format!("unsupported operator '{other}'")),
                }
            }
            _ => return Err(format!("incomplete clause after '{name}'")),
        }
        match toks.get(i) {
            None => break,
            Some(Tok::Ident(j))
                if j.eq_ignore_ascii_case("and") || j.eq_ignore_ascii_case("or") =>
            {
                let is_or = j.eq_ignore_ascii_case("or");
                if joiner.is_some_and(|prev| prev != is_or) {
                    return Err("mixing 'and' and 'or' is not supported".to_string());
                }
                joiner = Some(is_or);
                i += 1;
            }
            _ => return Err("expected 'and' or 'or'".to_string()),
        }
    }
    Ok(Filter {
        clauses,
        any: joiner.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_filters() {
        let f = parse("displayName eq 'O''Brien'").unwrap();
        assert_eq!(
            f.clauses,
            vec![Clause::Eq("displayName".into(), Lit::Str("O'Brien".into()))]
        );
        let f = parse("startswith(displayName,'vault-') and appId eq 'x'").unwrap();
        assert_eq!(f.clauses.len(), 2);
        let f = parse("atScope() and principalId eq 'abc'").unwrap();
        assert_eq!(f.clauses[0], Clause::Func("atscope".into(), vec![]));
        let f = parse("id in ('a', 'b')").unwrap();
        assert_eq!(
            f.clauses[0],
            Clause::In(
                "id".into(),
                vec![Lit::Str("a".into()), Lit::Str("b".into())]
            )
        );
        assert!(parse("displayName eq").is_err());
        assert!(parse("a eq 'x' and b eq 'y' or c eq 'z'").is_err());
        assert!(parse("displayName gt 'x'").is_err());
        assert!(parse("displayName eq 'x").is_err());
    }

    #[test]
    fn parses_any_lambdas_over_collections() {
        let f = parse("tags/any(t:t eq 'mount:abc')").unwrap();
        assert_eq!(
            f.clauses,
            vec![Clause::Any("tags".into(), AnyTest::Eq("mount:abc".into()))]
        );
        let f = parse("tags/any(x:startswith(x,'vault')) and displayName eq 'a'").unwrap();
        assert_eq!(
            f.clauses[0],
            Clause::Any("tags".into(), AnyTest::StartsWith("vault".into()))
        );
        assert_eq!(f.clauses.len(), 2);
        assert!(AnyTest::Eq("A".into()).matches("a"));
        assert!(!AnyTest::Eq("a".into()).matches("ab"));
        assert!(AnyTest::StartsWith("Va".into()).matches("vault"));
        for bad in [
            "tags/any(t:u eq 'x')",
            "tags/any(t:t gt 'x')",
            "tags/any(t:startswith(u,'x'))",
            "tags/any(t:t eq 'x'",
            "tags/any()",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
