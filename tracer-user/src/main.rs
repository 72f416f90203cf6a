use aya::maps::RingBuf;
use tango_tracer::{probes::Probes, records::Record};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::init();
    let (_probes, mut ring): (Probes, RingBuf<_>) = Probes::load(1024)?;
    loop {
        while let Some(item) = ring.next() {
            match Record::decode(&item) {
                Ok(r) => println!("{r:?}"),
                Err(e) => eprintln!("{e}"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
