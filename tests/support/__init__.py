"""What more than one test module uses: fakes at the protocol level, polling, media builders."""
