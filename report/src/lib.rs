//! What HoldFast shows people about a job, shared by `hfctl` and the
//! daemon: the job's attempts on a time axis (`gantt`), short texts for
//! durations, times and progress (`text`), and the self-contained HTML
//! execution report (`html`) that `hfctl report` writes and mail
//! notifications may attach.

pub mod gantt;
pub mod html;
pub mod text;
