//! Every command's flags read into its crate's typed command (`typed`): a flag added on one
//! side only fails here, not only when someone runs that command.

use super::{typed, Cli, Command};
use clap::Parser as _;

fn check(line: &str) {
    let argv = std::iter::once("builder").chain(line.split_whitespace());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{line}: {e}"));
    let read = match cli.command {
        Command::Build(a) => typed::<engine::command::BuildFlags>(*a).map(drop),
        Command::Run(a) => typed::<runtime::RunFlags>(*a).map(drop),
        Command::Image(c) => typed::<engine::image_command::ImageCommand>(c).map(drop),
        Command::Login(a) => typed::<distribution::login::LoginArgs>(a).map(drop),
        Command::Logout(a) => typed::<distribution::login::LogoutArgs>(a).map(drop),
        Command::Prune(a) => typed::<engine::prune_command::PruneFlags>(a).map(drop),
        Command::Du(a) => typed::<engine::prune_command::DuFlags>(a).map(drop),
        Command::Containers(c) => typed::<runtime::command::ContainerCommand>(c).map(drop),
        Command::Compose(a) => typed::<stack::ComposeCommand>(a.command).map(drop),
        Command::Serve(a) => typed::<remote::command::ServeFlags>(a).map(drop),
        Command::Builder(c) => typed::<remote::command::BuilderCommand>(c).map(drop),
        _ => Ok(()),
    };
    read.unwrap_or_else(|e| panic!("{line}: {e:#}"));
    typed::<Option<engine::isolation::IsolationFlag>>(cli.isolation).unwrap();
}

#[test]
fn every_command_reads_into_its_crates_type() {
    for line in [
        "--isolation chroot build --progress plain -t a --load .",
        "run -d --init --cpus 1.5 -p 80:80 --network a --network b --ip 10.0.0.9 img cmd",
        "pull img",
        "save -o f --format oci img",
        "load -i f",
        "history img",
        "login -u u -p p reg",
        "logout reg",
        "prune -a -f --filter until=1h",
        "du --format json",
        "create --name n img",
        "start -a -i c",
        "attach --no-stdin c",
        "stop -t 1 c",
        "restart c",
        "kill -s TERM c",
        "rm -f -v c",
        "wait c",
        "ps -a --filter name=x --format {{.ID}}",
        "logs -f -n 5 --since 1m -t c",
        "inspect -f {{.Id}} c",
        "exec -i -t -e A=1 -u u -w / c sh",
        "cp c:/a b",
        "stats --no-stream",
        "top c",
        "port c 80",
        "volume create --label a=b v",
        "volume ls -q",
        "volume inspect v",
        "volume rm -f v",
        "volume prune -a -f",
        "network create --subnet 10.0.0.0/24 n",
        "network ls",
        "network inspect n",
        "network rm n",
        "network prune -f",
        "network connect --alias a --ip 10.0.0.5 n c",
        "network disconnect -f n c",
        "container prune -f",
        "container ls -a",
        "container start-restartable",
        "compose -f c.yml config --format json",
        "compose up -d --scale a=2 --wait-timeout 3 a",
        "compose down -v --rmi all",
        "compose ps -a --format json",
        "compose logs -f --tail 3 --no-log-prefix",
        "compose exec -T --index 1 -e A=1 s sh",
        "compose run --rm -T s sh",
        "compose start s",
        "compose stop -t 1",
        "compose restart",
        "compose kill -s TERM",
        "compose rm -f -s -v",
        "compose top",
        "compose port s 80",
        "compose images",
        "compose ls -a",
        "compose wait",
        "compose pull",
        "compose push",
        "compose build",
        "serve --addr unix:///s --metrics-addr 127.0.0.1:9",
        "builder create b --node tcp://h:1",
        "builder ls",
        "builder rm b",
    ] {
        check(line);
    }
}
