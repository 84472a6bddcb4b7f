from collections.abc import AsyncIterator

from agentmesh import Agent, InvalidArgument, InvocationContext

agent = Agent()


@agent.unary("text.upper")
async def upper(payload: bytes, context: InvocationContext) -> str:
    if not payload:
        raise InvalidArgument("payload must not be empty")
    return payload.decode().upper()


@agent.stream("text.words")
async def words(payload: bytes, context: InvocationContext) -> AsyncIterator[str]:
    for word in payload.decode().split():
        yield word


if __name__ == "__main__":
    agent.run()
