//! `hfctl watch [JOB]`: a live view, updated from the daemon's
//! subscriptions (`job.watch` per job, `events.subscribe` for jobs that
//! come and go), never by polling: on a terminal a full-screen view with a
//! progress bar per running activity and the queue with why each job
//! waits (`q` quits); otherwise one plain line per change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{ActivityState, Job, JobState};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use tokio::sync::mpsc;

use super::Context;
use super::ps::waiting_text;
use super::status::progress;
use crate::daemon::Daemon;
use crate::error::is_lost;
use crate::error::{Error, Outcome};
use crate::output::{self, Palette};
use crate::watch::connect_again;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One job; without it, every running and queued job.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs))]
    pub job: Option<u64>,
}

/// More jobs than this would not fit on a screen anyway.
const MAX_JOBS: u32 = 200;

/// What wakes the view.
enum Update {
    /// A new snapshot of a job (from its `job.watch`).
    Job(Box<Job>),
    /// Jobs came or went (an event): list them again.
    Listing,
    /// `q`, Escape or Ctrl-C on the terminal.
    Quit,
    /// The terminal changed size.
    Redraw,
    /// A subscription of connection `generation` failed, or ended before
    /// its job did (`None`): the daemon went away.
    Lost {
        generation: u64,
        error: Option<Error>,
    },
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = Arc::new(ctx.connect_subscribing().await?);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut view = View::default();
    if let Some(job_id) = args.job {
        // Fails here, before the screen is taken, when there is no job.
        let job = daemon.call(daemon.client.job_get(job_id)).await?;
        view.jobs.insert(job.id, job);
    }
    let mut session = Session {
        socket: ctx.socket(),
        daemon,
        generation: 0,
        tx,
        watched: HashSet::new(),
        only: args.job,
    };
    session.subscribe(&mut view).await?;
    if std::io::stdout().is_terminal() && !ctx.json {
        return full_screen(session, view, rx, ctx.palette).await;
    }
    let mut printed: HashMap<String, String> = HashMap::new();
    plain_lines(&view, &mut printed, ctx.json)?;
    while let Some(update) = rx.recv().await {
        match update {
            Update::Job(job) => {
                let done = args.job == Some(job.id) && job.state.is_terminal();
                view.jobs.insert(job.id, *job);
                plain_lines(&view, &mut printed, ctx.json)?;
                if done {
                    break;
                }
            }
            Update::Listing => {
                session.relist(&mut view).await?;
                plain_lines(&view, &mut printed, ctx.json)?;
            }
            Update::Lost { generation, error } => {
                if session.is_current_loss(generation, error)? {
                    eprintln!(
                        "hfctl: lost the daemon on {}; connecting again",
                        session.socket.display()
                    );
                    session.reconnect(&mut view).await?;
                    plain_lines(&view, &mut printed, ctx.json)?;
                }
            }
            Update::Quit | Update::Redraw => {}
        }
    }
    Ok(Outcome::Success)
}

/// The jobs shown, by id, and what the view says about the connection.
#[derive(Default)]
struct View {
    jobs: BTreeMap<u64, Job>,
    notice: Option<String>,
}

/// The subscriptions of one connection, opened again when it is lost.
struct Session {
    socket: PathBuf,
    daemon: Arc<Daemon>,
    /// Counts connections, so that the end of an old one's subscriptions
    /// is not taken for the loss of the new one.
    generation: u64,
    tx: mpsc::UnboundedSender<Update>,
    watched: HashSet<u64>,
    /// `hfctl watch JOB`.
    only: Option<u64>,
}

impl Session {
    /// Subscribe to what the view shows.
    async fn subscribe(&mut self, view: &mut View) -> Result<(), Error> {
        match self.only {
            Some(job_id) => {
                self.watched.insert(job_id);
                self.spawn_job_watch(job_id);
                Ok(())
            }
            None => {
                self.spawn_events();
                self.relist(view).await
            }
        }
    }

    /// Whether a `Lost` update means the current connection is gone (and
    /// should be opened again); an error that is no loss is returned.
    fn is_current_loss(&self, generation: u64, error: Option<Error>) -> Result<bool, Error> {
        if generation != self.generation {
            return Ok(false);
        }
        match error {
            Some(error) if !is_lost(&error) => Err(error),
            _ => Ok(true),
        }
    }

    /// Connect again (waiting while the daemon is away) and subscribe anew.
    async fn reconnect(&mut self, view: &mut View) -> Result<(), Error> {
        self.daemon = Arc::new(connect_again(&self.socket, None).await?);
        self.generation += 1;
        self.watched.clear();
        view.notice = None;
        self.subscribe(view).await
    }

    /// List running and queued jobs again; watch those not yet watched;
    /// forget those that ended and are no longer listed.
    async fn relist(&mut self, view: &mut View) -> Result<(), Error> {
        let daemon = Arc::clone(&self.daemon);
        let mut open = HashSet::new();
        for state in [JobState::Running, JobState::Queued] {
            let list = daemon
                .call(daemon.client.job_list(
                    Some(state.as_str().to_string()),
                    None,
                    Some(MAX_JOBS),
                    None,
                    None,
                    None,
                ))
                .await?;
            open.extend(list.jobs.iter().map(|j| j.id));
        }
        view.jobs
            .retain(|id, job| open.contains(id) || !job.state.is_terminal());
        for id in open {
            if self.watched.insert(id) {
                self.spawn_job_watch(id);
            }
        }
        Ok(())
    }

    /// Forward every snapshot of `job_id` until it ends.
    fn spawn_job_watch(&self, job_id: u64) {
        let daemon = Arc::clone(&self.daemon);
        let tx = self.tx.clone();
        let generation = self.generation;
        tokio::spawn(async move {
            let mut subscription = match daemon.call(daemon.client.job_watch(job_id)).await {
                Ok(subscription) => subscription,
                // Ended and swept before it could be watched: nothing to show.
                Err(Error::NotFound { .. }) => return,
                Err(error) => {
                    let _ = tx.send(Update::Lost {
                        generation,
                        error: Some(error),
                    });
                    return;
                }
            };
            while let Some(item) = subscription.next().await {
                match item {
                    Ok(job) => {
                        let ended = job.state.is_terminal();
                        if tx.send(Update::Job(Box::new(job))).is_err() || ended {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = tx.send(Update::Lost {
                            generation,
                            error: Some(daemon.bad_item(error)),
                        });
                        return;
                    }
                }
            }
            let _ = tx.send(Update::Lost {
                generation,
                error: None,
            });
        });
    }

    /// A `Listing` for each job event: jobs submitted, started or finished.
    fn spawn_events(&self) {
        let daemon = Arc::clone(&self.daemon);
        let tx = self.tx.clone();
        let generation = self.generation;
        tokio::spawn(async move {
            let subscription = daemon
                .call(daemon.client.events_subscribe(
                    None,
                    None,
                    None,
                    Some(vec![
                        "job.submitted".into(),
                        "job.started".into(),
                        "job.finished".into(),
                    ]),
                    None,
                    Some(true),
                ))
                .await;
            let mut subscription = match subscription {
                Ok(subscription) => subscription,
                Err(error) => {
                    let _ = tx.send(Update::Lost {
                        generation,
                        error: Some(error),
                    });
                    return;
                }
            };
            while let Some(item) = subscription.next().await {
                if item.is_err() || tx.send(Update::Listing).is_err() {
                    break;
                }
            }
            let _ = tx.send(Update::Lost {
                generation,
                error: None,
            });
        });
    }
}

/// One line per job and per activity whose shown state changed since the
/// last call.
fn plain_lines(
    view: &View,
    printed: &mut HashMap<String, String>,
    json: bool,
) -> Result<(), Error> {
    for job in view.jobs.values() {
        let mut lines = vec![(
            format!("job {}", job.id),
            format!(
                "job {} {} {} {}{}",
                job.id,
                job.target,
                job.state.as_str(),
                output::percent(job.progress),
                job.waiting
                    .as_ref()
                    .map(|w| format!(" waiting {}", waiting_text(w)))
                    .unwrap_or_default()
            ),
        )];
        for activity in &job.activities {
            lines.push((
                format!("job {} {}", job.id, activity.path),
                format!(
                    "job {} {}.{} {} {}",
                    job.id,
                    activity.process,
                    activity.activity,
                    activity.state.as_str(),
                    progress(activity)
                )
                .trim_end()
                .to_string(),
            ));
        }
        let changed = lines
            .iter()
            .any(|(key, line)| printed.get(key) != Some(line));
        if json && changed {
            output::print_json_line(job)?;
        }
        for (key, line) in lines {
            if printed.get(&key) != Some(&line) {
                if !json {
                    output::print(&format!("{line}\n"))?;
                }
                printed.insert(key, line);
            }
        }
    }
    Ok(())
}

async fn full_screen(
    mut session: Session,
    mut view: View,
    mut rx: mpsc::UnboundedReceiver<Update>,
    palette: Palette,
) -> Result<Outcome, Error> {
    let mut terminal = ratatui::try_init().map_err(Error::Stdout)?;
    // Keys come from a blocking read on a thread of its own.
    let keys = session.tx.clone();
    std::thread::spawn(move || {
        loop {
            let update = match event::read() {
                Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => Update::Quit,
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        Update::Quit
                    }
                    _ => continue,
                },
                Ok(Event::Resize(..)) => Update::Redraw,
                Ok(_) => continue,
                Err(_) => Update::Quit,
            };
            if keys.send(update).is_err() {
                return;
            }
        }
    });
    let only = session.only;
    let mut failure = None;
    // Elapsed times move between events: the view is drawn again every
    // second from what it holds (the daemon is not asked).
    let mut clock = tokio::time::interval(std::time::Duration::from_secs(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Err(error) = terminal.draw(|frame| draw(frame, &view, only, &palette)) {
            failure = Some(Error::Stdout(error));
            break;
        }
        let update = tokio::select! {
            update = rx.recv() => update,
            _ = clock.tick() => Some(Update::Redraw),
        };
        let Some(update) = update else {
            break;
        };
        let result = match update {
            Update::Job(job) => {
                view.jobs.insert(job.id, *job);
                Ok(true)
            }
            Update::Listing => session.relist(&mut view).await.map(|()| true),
            Update::Redraw => Ok(true),
            Update::Quit => Ok(false),
            Update::Lost { generation, error } => {
                match session.is_current_loss(generation, error) {
                    Ok(false) => Ok(true),
                    Ok(true) => {
                        view.notice = Some(format!(
                            "lost the daemon on {}; connecting again",
                            session.socket.display()
                        ));
                        if let Err(error) =
                            terminal.draw(|frame| draw(frame, &view, only, &palette))
                        {
                            failure = Some(Error::Stdout(error));
                            break;
                        }
                        // Keys still work while the daemon is away.
                        tokio::select! {
                            result = session.reconnect(&mut view) => result.map(|()| true),
                            () = quit_key(&mut rx) => Ok(false),
                        }
                    }
                    Err(error) => Err(error),
                }
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    ratatui::restore();
    match failure {
        Some(error) => Err(error),
        None => Ok(Outcome::Success),
    }
}

/// Until `q` (or the like) is pressed; other updates are dropped, as the
/// new connection sends the state afresh.
async fn quit_key(rx: &mut mpsc::UnboundedReceiver<Update>) {
    while let Some(update) = rx.recv().await {
        if matches!(update, Update::Quit) {
            return;
        }
    }
}

fn draw(frame: &mut ratatui::Frame<'_>, view: &View, only: Option<u64>, palette: &Palette) {
    let area = frame.area();
    let (running, queued): (Vec<&Job>, Vec<&Job>) = view
        .jobs
        .values()
        .partition(|j| j.state != JobState::Queued);
    let [top, bottom, help] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length((queued.len() as u16).clamp(1, 10) + 2),
        Constraint::Length(1),
    ])
    .areas(area);

    let title = match only {
        Some(id) => format!(" job {id} "),
        None => " running ".to_string(),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(top);
    frame.render_widget(block, top);
    let mut rows: Vec<Row<'_>> = Vec::new();
    for job in &running {
        rows.push(Row::Job(job));
        for activity in &job.activities {
            if activity.state == ActivityState::Running
                || (only.is_some() && activity.state != ActivityState::Pending)
            {
                rows.push(Row::Activity(activity));
            }
        }
    }
    if rows.is_empty() {
        frame.render_widget(Paragraph::new("nothing runs"), inner);
    }
    for (n, row) in rows.iter().enumerate().take(usize::from(inner.height)) {
        let line = Rect {
            y: inner.y + n as u16,
            height: 1,
            ..inner
        };
        match row {
            Row::Job(job) => frame.render_widget(job_line(job, palette), line),
            Row::Activity(activity) => {
                // The label beside the bar, so the bar's cells are all bar.
                let [label, bar] =
                    Layout::horizontal([Constraint::Percentage(50), Constraint::Min(10)])
                        .areas(line);
                let text = format!(
                    "  {}.{} {} {}",
                    activity.process,
                    activity.activity,
                    activity.state.as_str(),
                    progress(activity)
                );
                frame.render_widget(Paragraph::new(text), label);
                frame.render_widget(bar_line(activity_ratio(activity), bar.width, palette), bar);
            }
        }
    }

    let block = Block::default().borders(Borders::ALL).title(" queue ");
    let inner = block.inner(bottom);
    frame.render_widget(block, bottom);
    let mut lines: Vec<Line<'_>> = queued
        .iter()
        .map(|job| {
            Line::from(format!(
                "{} {} {}",
                job.id,
                job.target,
                job.waiting.as_ref().map(waiting_text).unwrap_or_default()
            ))
        })
        .collect();
    // Running jobs may wait too (a retry delay, max_parallel).
    lines.extend(running.iter().filter_map(|job| {
        job.waiting
            .as_ref()
            .map(|w| Line::from(format!("{} {} {}", job.id, job.target, waiting_text(w))))
    }));
    if lines.is_empty() {
        lines.push(Line::from("nothing waits"));
    }
    frame.render_widget(Paragraph::new(lines), inner);
    let mut footer = vec![
        Span::styled("q", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" quits"),
    ];
    if let Some(notice) = &view.notice {
        footer.push(Span::styled(
            format!("  {notice}"),
            fg(palette, Color::Yellow),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(footer)), help);
}

/// What a row of the running section shows. A fan-out (many activities
/// from one) would be one more kind of row: its bar counting the items
/// done.
enum Row<'a> {
    Job(&'a Job),
    Activity(&'a holdfast_api::ActivityRun),
}

/// A foreground colour, or none when colours are off (`NO_COLOR`, ...).
fn fg(palette: &Palette, colour: Color) -> Style {
    if palette.colour() {
        Style::new().fg(colour)
    } else {
        Style::new()
    }
}

fn job_line<'a>(job: &'a Job, palette: &Palette) -> Paragraph<'a> {
    let style = match job.state {
        JobState::Failed => fg(palette, Color::Red),
        JobState::Succeeded => fg(palette, Color::Green),
        _ => Style::new(),
    };
    Paragraph::new(Line::from(vec![
        Span::styled(
            format!("{} {}", job.id, job.target),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(" "),
        Span::styled(job.state.as_str(), style),
        Span::raw(format!(
            " {} {}",
            output::percent(job.progress),
            output::elapsed_text(job.started_at.as_deref(), job.finished_at.as_deref())
        )),
    ]))
}

/// A bar `width` cells wide, `ratio` of them filled.
fn bar_line(ratio: f64, width: u16, palette: &Palette) -> Paragraph<'static> {
    let filled = (ratio * f64::from(width)).round() as usize;
    let rest = usize::from(width).saturating_sub(filled);
    let (done, to_do) = if palette.utf8() {
        ("█", "░")
    } else {
        ("#", "-")
    };
    Paragraph::new(Line::from(vec![
        Span::styled(done.repeat(filled), fg(palette, Color::Green)),
        Span::styled(to_do.repeat(rest), fg(palette, Color::DarkGray)),
    ]))
}

/// How full an activity's bar is: its progress, or full once it ended.
fn activity_ratio(activity: &holdfast_api::ActivityRun) -> f64 {
    if activity.state.is_terminal() {
        return 1.0;
    }
    (activity.progress.unwrap_or(0.0) / 100.0).clamp(0.0, 1.0)
}
