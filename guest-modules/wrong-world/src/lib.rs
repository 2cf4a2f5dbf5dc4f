//! A valid component of another world: the upload check must refuse it and name what is missing.

wit_bindgen::generate!({
    inline: "package test:other; world other { export hello: func() -> string; }",
    world: "other",
});

struct Other;

impl Guest for Other {
    fn hello() -> String {
        "not a room".into()
    }
}

export!(Other);
