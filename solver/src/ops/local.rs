//! A client directory (the build context or a named context). Its key is the checksum of
//! everything in it; copies from it key only what they read (see `file`).

use crate::ops::{Caching, Input, Produced, SolveOp, Step};
use crate::solve::Ref;
use crate::worker::Worker;
use anyhow::Result;

pub(crate) struct Local<'a> {
    pub name: &'a str,
}

impl SolveOp for Local<'_> {
    fn caching(&self) -> Caching {
        Caching::Own
    }

    /// Indexing the directory is the step shown.
    fn cache_key(&mut self, w: &Worker, step: &Step, _: &[Input]) -> Result<String> {
        w.run_step(step.vertex, step.name, || {
            Ok(w.context_index(self.name)?.checksum(&[String::new()]))
        })
    }

    /// Reading the context runs no step; it does not count as work done.
    fn run(&mut self, _: &Worker, _: &Step, _: &[Input]) -> Result<Produced> {
        Ok(Produced {
            result: Ref::Local(self.name.to_string()),
            cached: true,
        })
    }
}
