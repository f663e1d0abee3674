//! Layering check: the crate's modules must form a directed acyclic graph of named floors.
//!
//! Why: the modules used to form one import circle, so nothing could be understood, tested or
//! changed on its own. This test keeps them apart. The rules:
//! - every top-level module sits on a floor (`FLOORS`, bottom first) and imports only from its
//!   own floor or lower ones;
//! - the imports between top-level modules form no cycle (so same-floor imports go one way);
//! - inside a module, its submodules form no cycle either. The parent may use its children (it
//!   is their facade) and children may use the parent's own items; those edges are not counted;
//! - nothing is imported through items of `lib.rs` itself (that would hide the real module),
//!   and every file under `src/` is reached through `mod` lines (so none goes unchecked).
//!
//! How: no grep. The module tree is walked the way the compiler walks it (from `src/lib.rs` and
//! `src/main.rs`, following `mod x;` declarations and inline `mod x { .. }`), every file is parsed
//! with `syn`, and every path that names a module of this crate is collected:
//! - `use` trees (`use crate::{a, b::c}`, `use super::x`, `use self::x`),
//! - paths in types, expressions, patterns, attributes (`crate::x::Y`, `super::Y`, ...),
//! - inside macro invocations and `macro_rules!` bodies, whose tokens syn does not parse, the token
//!   sequences `crate :: a :: b`, `$crate :: a`, `super :: a` and `self :: a`,
//! - in `src/main.rs` (the binary, a crate of its own) `kafka_sidecar::x` names the library and
//!   `crate::x` names the binary's own modules. The binary is the top floor, `cli`.
//!
//! Test-only code (`#[cfg(test)]` items, `#[test]` functions, and the files of `#[cfg(test)] mod x;`)
//! is left out: unit tests may reach across floors to build their fixtures; the rule is about
//! what ships. Other `cfg`s (the `demo` feature) are included. Doc links are not imports.
//!
//! Known blind spots (all visible in review): a name brought in by `use super::*` and then used
//! bare counts as an import of the parent, not of the sibling it came from; a path through a
//! re-export counts as an import of the re-exporting module; `#[path]` is refused, not followed.
//!
//! Run `cargo test --test layers -- --ignored --nocapture print_module_graph` to print the
//! graph with, for every edge, the lines that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// The floors, bottom (1) first. A module may import from modules on its own floor (as long as
/// that makes no cycle) and on lower floors, never from higher ones. Every top-level module of
/// the crate must be listed; names listed here that do not exist (yet) are fine. `cli` is
/// `src/main.rs`.
#[rustfmt::skip] // One floor a line reads as a table.
const FLOORS: &[(&str, &[&str])] = &[
    // Frames (and splicing their record bytes socket to socket), bounded decoding, the table of
    // the APIs the proxy decodes, metric names (and the HTTP endpoint that serves them: it imports
    // nothing of the crate).
    ("frames", &["codec", "splice", "apis", "api_versions", "admin"]),
    // What the operator wrote: the YAML config and the TLS material it points at.
    ("config", &["config", "tls"]),
    // One Kafka connection to a broker, and authenticating it.
    ("connection", &["connection", "sasl"]),
    // Opening upstream connections; a cluster at run time (learned brokers, reachability).
    ("upstream", &["upstream", "cluster"]),
    // Rewriting broker addresses in answers; the active cluster and failover.
    ("routing", &["rewrite", "switch"]),
    // Features that look into requests, each through a narrow context trait (`feature`), never
    // through a whole session.
    ("features", &["feature", "producer_identity", "group_membership", "topic_identity", "consumer_positions"]),
    // Dispatch of the requests the proxy looks into to the features.
    ("intercept", &["intercept"]),
    // One client connection relayed upstream; the local listeners that accept them.
    ("session", &["session", "listeners"]),
    // Fleet failover decisions through control topics. Below `proxy`: the proxy drives it.
    ("control", &["control"]),
    // Start-up, config application and hot reload, status, shutdown.
    ("proxy", &["proxy", "config_watch"]),
    // The embedded demo and the binary.
    ("cli", &["demo", "cli"]),
];

/// The name of the pseudo top-level module that `src/main.rs` (the binary crate) stands for.
const BIN: &str = "cli";
/// How `src/main.rs` names the library.
const LIB_CRATE: &str = "kafka_sidecar";

/// The real check. Fails on an upward import, a cycle, or a module missing from `FLOORS`.
#[test]
fn modules_form_layered_dag() {
    let crate_ = Crate::load();
    let report = crate_.check();
    // Shown by the test harness on failure, or always with `--nocapture`.
    println!("{}", crate_.render(false));
    assert!(
        report.is_empty(),
        "the module graph breaks the layering rule (see FLOORS in tests/layers.rs):\n{report}"
    );
}

/// For humans: the whole graph, with the lines behind every edge. Never fails.
#[test]
#[ignore = "prints the module graph; run with --ignored --nocapture"]
fn print_module_graph() {
    let crate_ = Crate::load();
    println!("{}", crate_.render(true));
    let report = crate_.check();
    if report.is_empty() {
        println!("layering: OK");
    } else {
        println!("layering violations:\n{report}");
    }
}

/// The analyzer itself: every kind of reference it claims to see, and test code left out.
#[test]
fn analyzer_sees_every_kind_of_reference() {
    let code = r#"
        use crate::{a, b::{c, D}};
        use super::sib::*;
        pub(crate) fn f(x: crate::e::T) -> super::super::g::U {
            metrics::counter!(crate::h::names::X).increment(1);
            tracing::info!(y = ?$crate::i::Y);
            self::child::z();
        }
        #[cfg(test)]
        mod tests { use crate::not_seen; }
        #[cfg(all(test, unix))]
        fn also_not_seen() { crate::not_seen2::f(); }
    "#;
    let ast = syn::parse_file(code).unwrap();
    let mut v = FileVisitor {
        file: "x.rs".into(),
        module: vec!["m".into(), "n".into()],
        dir: PathBuf::new(),
        in_bin: false,
        refs: vec![],
        inline_mods: vec![],
        child_files: vec![],
    };
    v.visit_file(&ast);
    let seen: BTreeSet<String> = v.refs.iter().map(|r| r.target.join("::")).collect();
    let want = [
        "a",
        "b::c",
        "b::D",
        "m::sib",
        "e::T",
        "g::U",
        "h::names::X",
        "i::Y",
        "m::n::child::z",
    ];
    assert_eq!(
        seen,
        want.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
}

/// A module path inside the crate, e.g. `["control", "follower"]`; `[]` is the library root.
type ModPath = Vec<String>;

/// One reference from code in module `from` to the crate item `target` (absolute segments).
#[derive(Debug, Clone)]
struct Ref {
    from: ModPath,
    target: Vec<String>,
    /// `src/...:line`, and the path as written, for the messages.
    at: String,
    text: String,
}

#[derive(Default)]
struct Crate {
    /// Every module (including inline ones) and the file it lives in.
    modules: BTreeMap<ModPath, PathBuf>,
    /// Files reached only through `#[cfg(test)] mod x;`: not checked, but accounted for.
    test_files: BTreeSet<PathBuf>,
    refs: Vec<Ref>,
}

impl Crate {
    fn load() -> Crate {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut c = Crate::default();
        c.modules.insert(vec![], src.join("lib.rs"));
        c.load_file(&src.join("lib.rs"), vec![], false);
        let bin = vec![BIN.to_string()];
        c.modules.insert(bin.clone(), src.join("main.rs"));
        c.load_file(&src.join("main.rs"), bin, true);

        // Every source file must have been reached, so nothing is silently left unchecked.
        let mut reached: BTreeSet<PathBuf> = c.modules.values().cloned().collect();
        reached.extend(c.test_files.iter().cloned());
        let mut unreached = vec![];
        for f in rs_files(&src) {
            if !reached.contains(&f) {
                unreached.push(f);
            }
        }
        assert!(
            unreached.is_empty(),
            "files under src/ not reached from lib.rs/main.rs through `mod` lines: {unreached:?}"
        );
        c
    }

    /// Parses the file of module `module` and, recursively, the files of its `mod x;` children.
    fn load_file(&mut self, file: &Path, module: ModPath, in_bin: bool) {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        // Where `mod x;` looks for `x.rs`: beside lib.rs/main.rs/mod.rs, else in a directory
        // named after the file (`src/codec.rs` -> `src/codec/`).
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().unwrap().to_path_buf(),
            _ => file.with_extension(""),
        };
        let mut v = FileVisitor {
            file: display_path(file),
            module: module.clone(),
            dir,
            in_bin,
            refs: vec![],
            inline_mods: vec![],
            child_files: vec![],
        };
        v.visit_file(&ast);
        self.refs.append(&mut v.refs);
        for m in v.inline_mods {
            self.modules.insert(m, file.to_path_buf());
        }
        for (child, path, test_only) in v.child_files {
            if test_only {
                self.test_files.insert(path);
            } else {
                self.modules.insert(child.clone(), path.clone());
                self.load_file(&path, child, in_bin);
            }
        }
    }

    /// The module a reference lands in: the longest prefix of its target that is a module.
    fn module_of(&self, target: &[String]) -> ModPath {
        (0..=target.len())
            .rev()
            .map(|n| target[..n].to_vec())
            .find(|p| self.modules.contains_key(p))
            .unwrap_or_default()
    }

    /// Edges between top-level modules (self-edges dropped), each with the refs behind it.
    fn top_edges(&self) -> BTreeMap<(String, String), Vec<&Ref>> {
        let mut edges: BTreeMap<(String, String), Vec<&Ref>> = BTreeMap::new();
        for r in &self.refs {
            let to = self.module_of(&r.target);
            if let (Some(a), Some(b)) = (r.from.first(), to.first()) {
                if a != b {
                    edges.entry((a.clone(), b.clone())).or_default().push(r);
                }
            }
        }
        edges
    }

    /// Edges between the children of one module, per parent. A reference from inside child `a`
    /// of `P` to inside child `b` of `P` is the edge `a -> b` in `P`'s graph; a reference to
    /// items of `P` itself is `a -> (P)`. References from `P` to its own children are the parent
    /// using its parts and make no edge. The crate root's children are the top-level graph, so
    /// it is left out here.
    fn inner_edges(&self) -> BTreeMap<ModPath, BTreeMap<(String, String), Vec<&Ref>>> {
        let mut out: BTreeMap<ModPath, BTreeMap<(String, String), Vec<&Ref>>> = BTreeMap::new();
        for r in &self.refs {
            let to = self.module_of(&r.target);
            let common = r.from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == 0 || common == r.from.len() {
                continue; // Across top-level modules, or from a module into its own subtree.
            }
            let parent = to[..common].to_vec();
            let a = r.from[common].clone();
            let b = to
                .get(common)
                .cloned()
                .unwrap_or_else(|| format!("({})", parent.join("::")));
            out.entry(parent)
                .or_default()
                .entry((a, b))
                .or_default()
                .push(r);
        }
        out
    }

    /// All violations, one paragraph each; empty when the layering holds.
    fn check(&self) -> String {
        let mut report = String::new();
        let floor = floor_index();
        let top = self.top_edges();

        // Every top-level module must have a floor.
        for m in self.modules.keys().filter(|m| m.len() == 1) {
            if !floor.contains_key(m[0].as_str()) {
                let _ = writeln!(report, "module `{}` is on no floor: add it to FLOORS", m[0]);
            }
        }
        // References to items of lib.rs itself would hide which module they come from.
        for r in &self.refs {
            if self.module_of(&r.target).is_empty() {
                let _ = writeln!(
                    report,
                    "{}: `{}` names an item of the crate root; import it from its module",
                    r.at, r.text
                );
            }
        }

        // Upward edges.
        for ((a, b), refs) in &top {
            if let (Some(&fa), Some(&fb)) = (floor.get(a.as_str()), floor.get(b.as_str())) {
                if fa < fb {
                    let _ = writeln!(
                        report,
                        "upward import: {a} (floor {} {}) -> {b} (floor {} {}){}",
                        fa + 1,
                        FLOORS[fa].0,
                        fb + 1,
                        FLOORS[fb].0,
                        evidence(refs)
                    );
                }
            }
        }

        // Cycles between top-level modules. Every cycle through modules with a floor holds an
        // upward import (listed above) or lies on one floor; the latter are listed here with
        // their lines, as what is left to break once the upward imports are gone.
        let level: BTreeMap<(String, String), Vec<&Ref>> = top
            .iter()
            .filter(
                |((a, b), _)| match (floor.get(a.as_str()), floor.get(b.as_str())) {
                    (Some(fa), Some(fb)) => fa >= fb,
                    _ => true,
                },
            )
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for scc in cycles(top.keys()) {
            let _ = writeln!(
                report,
                "import cycle between {} top-level modules {{{}}}",
                scc.len(),
                scc.join(", ")
            );
        }
        for scc in cycles(level.keys()) {
            let _ = writeln!(
                report,
                "import cycle without upward imports (same floor, or no floor) {{{}}}:{}",
                scc.join(", "),
                cycle_edges(&scc, &level)
            );
        }
        // Cycles between the submodules of one module.
        for (parent, edges) in self.inner_edges() {
            for scc in cycles(edges.keys()) {
                let _ = writeln!(
                    report,
                    "import cycle inside `{}` between {{{}}}:{}",
                    parent.join("::"),
                    scc.join(", "),
                    cycle_edges(&scc, &edges)
                );
            }
        }
        report
    }

    /// The graph for humans: floors, top-level modules with their imports, submodule graphs.
    fn render(&self, with_evidence: bool) -> String {
        let floor = floor_index();
        let top = self.top_edges();
        let mut s = String::from("module graph (module -> the crate modules it imports)\n");
        let top_mods: BTreeSet<&str> = self
            .modules
            .keys()
            .filter(|m| m.len() == 1)
            .map(|m| m[0].as_str())
            .collect();
        let mut order: Vec<&str> = top_mods.iter().copied().collect();
        order.sort_by_key(|m| (floor.get(m).map_or(usize::MAX, |f| usize::MAX - f), *m));
        for m in order {
            let deps: Vec<String> = top
                .keys()
                .filter(|(a, _)| a == m)
                .map(|(_, b)| match (floor.get(m), floor.get(b.as_str())) {
                    (Some(fa), Some(fb)) if fa < fb => format!("{b} [UP]"),
                    _ => b.clone(),
                })
                .collect();
            let f = floor.get(m).map_or("no floor".to_string(), |&f| {
                format!("{} {}", f + 1, FLOORS[f].0)
            });
            let _ = writeln!(s, "  [{f}] {m} -> {}", list_or_none(&deps));
            if with_evidence {
                for ((a, b), refs) in top.iter().filter(|((a, _), _)| a == m) {
                    let _ = writeln!(
                        s,
                        "      {a} -> {b}:{}",
                        evidence(refs).replace('\n', "\n    ")
                    );
                }
            }
        }
        let inner = self.inner_edges();
        if !inner.is_empty() {
            s.push_str(
                "inside modules (child -> sibling, or -> (parent) for the parent's own items)\n",
            );
        }
        for (parent, edges) in &inner {
            let name = parent.join("::");
            let _ = writeln!(s, "  {name}:");
            let mut users_of_parent = vec![];
            for ((a, b), refs) in edges {
                if !with_evidence && b.starts_with('(') {
                    users_of_parent.push(a.clone());
                    continue;
                }
                let _ = write!(s, "    {a} -> {b}");
                if with_evidence {
                    s.push(':');
                    s.push_str(&evidence(refs).replace('\n', "\n  "));
                }
                s.push('\n');
            }
            if !users_of_parent.is_empty() {
                let _ = writeln!(s, "    -> ({name}) from: {}", users_of_parent.join(", "));
            }
        }
        s
    }
}

/// Walks one file's AST, collecting references and `mod` declarations.
struct FileVisitor {
    file: String,
    module: ModPath,
    /// Where `mod x;` in the current (possibly inline) module looks for its file.
    dir: PathBuf,
    in_bin: bool,
    refs: Vec<Ref>,
    inline_mods: Vec<ModPath>,
    /// `mod x;` children: module path, file, whether it is `#[cfg(test)]`.
    child_files: Vec<(ModPath, PathBuf, bool)>,
}

impl FileVisitor {
    /// Records `segments` (as written at `line`) if it names something of the crate.
    fn record(&mut self, segments: &[String], line: usize) {
        let Some(target) = self.resolve(segments) else {
            return;
        };
        self.refs.push(Ref {
            from: self.module.clone(),
            target,
            at: format!("{}:{line}", self.file),
            text: segments.join("::"),
        });
    }

    /// The absolute path a path as written points to, if it points into the crate (or, from
    /// main.rs, into the library). Paths starting with another name are external crates or
    /// local names (already covered by the `use` that brought them in).
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        let mut base = match first.as_str() {
            "crate" | "$crate" if self.in_bin => vec![BIN.to_string()],
            "crate" | "$crate" => vec![],
            LIB_CRATE if self.in_bin => vec![],
            "self" => self.module.clone(),
            "super" => {
                let mut m = self.module.clone();
                m.pop();
                m
            }
            _ => return None,
        };
        let mut rest = rest.iter().peekable();
        if first == "super" {
            while rest.next_if(|s| *s == "super").is_some() {
                base.pop();
            }
        }
        base.extend(rest.cloned());
        Some(base)
    }

    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(&p.tree, prefix);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let line = n.ident.span().start().line;
                let mut full = prefix.clone();
                if n.ident != "self" || prefix.is_empty() {
                    full.push(n.ident.to_string());
                }
                self.record(&full, line);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.record(&full, r.ident.span().start().line);
            }
            syn::UseTree::Glob(g) => {
                let line = g.star_token.spans[0].start().line;
                let full = prefix.clone();
                self.record(&full, line);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(t, prefix);
                }
            }
        }
    }

    /// Finds `crate :: a :: b` (and `$crate`, `super`, `self`, `kafka_sidecar` in main.rs) in
    /// macro tokens, which syn leaves unparsed.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        let is_path_sep = |i: usize| {
            matches!((tts.get(i), tts.get(i + 1)),
                (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                    if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
        };
        let mut i = 0;
        while i < tts.len() {
            match &tts[i] {
                TokenTree::Group(g) => self.scan_tokens(g.stream()),
                TokenTree::Ident(id) => {
                    let name = id.to_string();
                    let starts = matches!(name.as_str(), "crate" | "super" | "self")
                        || (self.in_bin && name == LIB_CRATE);
                    // Not the tail of a longer path (`a::super` is no start).
                    let after_sep = i >= 2 && is_path_sep(i - 2);
                    if starts && !after_sep && is_path_sep(i + 1) {
                        let dollar = i > 0
                            && matches!(&tts[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                        let mut segs = vec![if dollar { format!("${name}") } else { name }];
                        let mut j = i + 1;
                        while is_path_sep(j) {
                            match tts.get(j + 2) {
                                Some(TokenTree::Ident(next)) => segs.push(next.to_string()),
                                _ => break,
                            }
                            j += 3;
                        }
                        self.record(&segs, id.span().start().line);
                        i = j;
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for FileVisitor {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::ExternCrate(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::ForeignMod(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::TraitAlias(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Union(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            // `mod` (in `visit_item_mod`) handles its own attributes: the file of a test-only
            // `mod x;` is still accounted for.
            _ => &[],
        };
        if !is_test_only(attrs) {
            visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.attrs.iter().any(|a| a.path().is_ident("path")) {
            panic!(
                "{}: `#[path]` on `mod {}` is not supported by tests/layers.rs",
                self.file, m.ident
            );
        }
        let test_only = is_test_only(&m.attrs);
        let mut child = self.module.clone();
        child.push(m.ident.to_string());
        let child_dir = self.dir.join(m.ident.to_string());
        match &m.content {
            None => {
                let flat = self.dir.join(format!("{}.rs", m.ident));
                let file = if flat.exists() {
                    flat
                } else {
                    child_dir.join("mod.rs")
                };
                assert!(
                    file.exists(),
                    "{}: no file for `mod {};`",
                    self.file,
                    m.ident
                );
                self.child_files.push((child, file, test_only));
            }
            Some(_) if test_only => {}
            Some((_, items)) => {
                self.inline_mods.push(child.clone());
                let outer_module = std::mem::replace(&mut self.module, child);
                let outer_dir = std::mem::replace(&mut self.dir, child_dir);
                for i in items {
                    self.visit_item(i);
                }
                self.module = outer_module;
                self.dir = outer_dir;
            }
        }
    }

    fn visit_impl_item(&mut self, i: &'ast syn::ImplItem) {
        let attrs: &[syn::Attribute] = match i {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            visit::visit_impl_item(self, i);
        }
    }

    fn visit_trait_item(&mut self, i: &'ast syn::TraitItem) {
        let attrs: &[syn::Attribute] = match i {
            syn::TraitItem::Const(i) => &i.attrs,
            syn::TraitItem::Fn(i) => &i.attrs,
            syn::TraitItem::Type(i) => &i.attrs,
            syn::TraitItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            visit::visit_trait_item(self, i);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut prefix = vec![];
        if u.leading_colon.is_none() {
            self.use_tree(&u.tree, &mut prefix);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            if let Some(first) = p.segments.first() {
                self.record(&segs, first.ident.span().start().line);
            }
        }
        visit::visit_path(self, p);
    }

    /// `pub(crate)`, `pub(super)`, `pub(in crate::x)` say who may look, not what is imported.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.scan_tokens(m.tokens.clone());
        visit::visit_macro(self, m);
    }
}

/// `#[test]`, or a `#[cfg(..)]` that holds only under `cfg(test)`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    fn needs_test(meta: &syn::Meta) -> bool {
        match meta {
            syn::Meta::Path(p) => p.is_ident("test"),
            syn::Meta::List(l) => {
                let Ok(args) = l.parse_args_with(
                    syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
                ) else {
                    return false;
                };
                if l.path.is_ident("all") {
                    args.iter().any(needs_test)
                } else if l.path.is_ident("any") {
                    !args.is_empty() && args.iter().all(needs_test)
                } else {
                    false
                }
            }
            syn::Meta::NameValue(_) => false,
        }
    }
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg")
                && a.parse_args::<syn::Meta>().is_ok_and(|m| needs_test(&m)))
    })
}

/// Module name -> floor index (0 = bottom).
fn floor_index() -> BTreeMap<&'static str, usize> {
    let mut idx = BTreeMap::new();
    for (i, (_, mods)) in FLOORS.iter().enumerate() {
        for m in *mods {
            assert!(idx.insert(*m, i).is_none(), "`{m}` is on two floors");
        }
    }
    idx
}

/// The strongly connected components with more than one node (Tarjan), each sorted.
fn cycles<'a>(edges: impl Iterator<Item = &'a (String, String)>) -> Vec<Vec<String>> {
    let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        adj.entry(a).or_default().push(b);
        adj.entry(b).or_default();
    }
    struct Tarjan<'g> {
        adj: &'g BTreeMap<&'g str, Vec<&'g str>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for &w in &self.adj[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = vec![];
                while let Some(w) = self.stack.pop() {
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        adj: &adj,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        out: vec![],
    };
    for &v in adj.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// The edges that lie inside one cycle (component), with the lines behind them.
fn cycle_edges(scc: &[String], edges: &BTreeMap<(String, String), Vec<&Ref>>) -> String {
    let mut s = String::new();
    for ((a, b), refs) in edges {
        if scc.contains(a) && scc.contains(b) {
            let _ = write!(s, "\n  {a} -> {b}:{}", evidence(refs).replace('\n', "\n  "));
        }
    }
    s
}

/// `\n    src/x.rs:12 crate::y::Z` for each line behind an edge (several names on one line, as in
/// `use crate::y::{Z, W}`, are counted, not listed).
fn evidence(refs: &[&Ref]) -> String {
    let mut by_line: BTreeMap<(&str, usize), BTreeSet<&str>> = BTreeMap::new();
    for r in refs {
        let (file, line) = r.at.rsplit_once(':').unwrap();
        let line = line.parse().unwrap();
        by_line.entry((file, line)).or_default().insert(&r.text);
    }
    let mut s = String::new();
    for ((file, line), texts) in by_line {
        let first = texts.first().unwrap();
        let _ = write!(s, "\n    {file}:{line} {first}");
        if texts.len() > 1 {
            let _ = write!(s, " (+{} more)", texts.len() - 1);
        }
    }
    s
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(nothing)".to_string()
    } else {
        items.join(", ")
    }
}

fn display_path(file: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rs_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}
